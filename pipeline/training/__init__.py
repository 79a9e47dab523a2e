"""Training of every model (teacher, student, baselines): config, data assembly, checkpoints, the loop.

config.TrainConfig (params group `train.loop`) -> data.build_train_data (the run's tensors) ->
loop.fit (the optimisation, with early stopping and resume from checkpoint.py). Training never reads the
simulated world's truth (only pipeline.evaluate may).
"""
