"""`python -m tumorlens.bench`: every number TumorLens claims, regenerated beside the seed systems'."""
