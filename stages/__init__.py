"""Pipeline stages: one module per stage, each a function from inputs and config to a result."""
