"""The torch runtime worker: ``calibrate`` (:mod:`runtime.worker.calibrate`) and ``run``
(:mod:`runtime.worker.run_plan`), with the model builder (:mod:`runtime.worker.model`), the
layouts (:mod:`runtime.worker.layout`) and process/timing helpers
(:mod:`runtime.worker.dist`). Every module here imports torch; nothing outside this package
does.
"""
