"""The only package allowed below aio-pika's public API: hand-made frames and the fast
publish path on aiormq/pamqp internals (wire), pinned to the versions it was written for."""
