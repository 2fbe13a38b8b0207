import torch

config = {"lr": 0.1}
print("loading config")
batch_size = config["batch_size"]
