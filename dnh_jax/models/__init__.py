"""dnh_jax: deep neural hashing for medical image retrieval in JAX/Flax."""
