"""The harness's offline datasets (:mod:`.datasets`) and its standard models, one width knob
each (:mod:`.models`)."""
