"""The orchestration of a training run, above train/, plan/, model/ and data/: config in, tracked run folder out.

start.py checks and creates the run folder; session.py builds what the loop needs; evaluation.py the
evaluations, samples and best adapter during training; retries.py steps down the out-of-memory ladder;
finish.py writes the adapter and the results; run.py ties them together (run, resume, a prepared folder).
"""
