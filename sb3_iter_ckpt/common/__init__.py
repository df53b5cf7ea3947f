"""What every layer shares: the metrics record format, the selection rule, record signing, the version.

Pure modules; nothing here reaches the store, the runner or the report.
"""
