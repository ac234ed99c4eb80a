"""``perforate bench``: the quality protocol's arms (:mod:`.arms`), its time estimate
(:mod:`.estimate`), its report (:mod:`.render`) and the command (:mod:`.cli`)."""
