"""Pure-JAX networks: each module has `init(key, ...) -> params` and `apply(params, x, ...)`."""
