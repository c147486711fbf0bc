"""Evaluation: detections from a checkpoint, mAP as darknet computes it, the best weights.

`mapcalc` scores detections (AlexeyAB's definition), `detect` gets them (OpenCV's DNN
module, or darknet itself through `detector valid`), `evaluate` puts both together for one
checkpoint and one run. `cadence` says which checkpoints are due and sends them.
"""
