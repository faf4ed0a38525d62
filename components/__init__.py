"""KFP components, one per stage: thin lightweight-Python wrappers whose bodies call `vesselseg`."""
