"""The stages a run goes through, from a config and a checkpoint to results files: validation
(`validate`), the run folder's lock (`runlock`), features and their preprocessing, head fitting
(`evaluate`), diagnostics, the volume analysis stage, tuning, and the pipeline that chains them."""
