"""The front end: a model and example inputs -> our IR, through torch.export (`capture`),
with one lowering per ATen op family (`aten_ops`, `aten_nn`)."""
