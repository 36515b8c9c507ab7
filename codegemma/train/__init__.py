"""Training: the loop (loop.py) and its parts, applied around the plain model from outside.

config (TrainConfig, TOML) -> data (rows, order, batches) -> setup (model, optimiser, schedule) ->
lora / parallel (activation checkpointing, compile, FSDP2) -> step (masks, loss, precision) ->
checkpoint (atomic, resumable) -> metrics (JSON lines, MFU, plot). `codegemma train` is commands.py.
"""
