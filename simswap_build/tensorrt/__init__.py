"""TensorRT plans from the bundle's graphs (11.x and 10.x), their compatibility notes, and the Triton
model repository export."""
