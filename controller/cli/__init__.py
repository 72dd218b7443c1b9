"""canaryctl: the operator's command line. Command modules load lazily to keep start-up fast."""
