"""The synthetic harness (checklist stages B and E): a release through a stage's policies on the
embedded simulator, on the accelerated clock, with faults on a schedule (`canaryctl harness run`).

    faults.py     the fault schedule's grammar, and which policy should catch each fault (pure)
    plan.py       the stage's policy file and the release's strategy, found and checked up front
    release.py    the release as the harness places it: its bot in process, through its entry point
    stepping.py   the stepped clock: jumps only at quiet moments, so 48 h take about a minute
    run.py        one run: placements, verification, injections and rollbacks
    scoring.py    what catches which fault, what is the release failing, the outcome (pure)
    result.py     what the run found, as JSON and for people
    record.py     the run in the store, as a finished rollout `canaryctl report` renders
"""
