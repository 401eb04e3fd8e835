"""Model references made into the folders every stage loads: the one resolver, from-scratch models."""
