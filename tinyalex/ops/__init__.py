"""Differentiable ops: one module per op, each a Function whose forward saves the cache its backward consumes."""
