"""Off-policy evaluation (OPE) of exploration policies on logged decisions."""
