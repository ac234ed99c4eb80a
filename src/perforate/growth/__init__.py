"""Growth methods, one per `Config.mode`: ``gd`` (gradient dendrites) and ``pb`` (correlation-trained
candidates, perforated; ``cached`` is its fast path)."""
