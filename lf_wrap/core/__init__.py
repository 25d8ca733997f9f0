"""The shared core every stage uses: files, processes, provenance, errors, environments, recipes, hashing."""
