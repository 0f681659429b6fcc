print("stasis-bench: not yet")
