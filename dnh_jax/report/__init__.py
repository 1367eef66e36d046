"""Reports: result tables, ablation sweeps (`sweep`) and their tables (`ablation_tables`),
the untrained-combination table and the fuzzy-rule report; they read finished workdirs."""
