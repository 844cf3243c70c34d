def build_report(d):
    return d
