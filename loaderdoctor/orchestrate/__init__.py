"""Target resolution, the plan, supervising one child, the experiments, probe, check,
writing outputs."""
