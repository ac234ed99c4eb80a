"""Run scripts written for the perforatedai library on perforate: change only the import line.

    from perforate.compat.perforatedai import globals_perforatedai as GPA, utils_perforatedai as UPA

``GPA.pc`` holds the reference's settings, ``UPA.initialize_pai`` (3.0/3.1) or
``UPA.perforate_model`` (3.2) converts the model, and ``GPA.pai_tracker`` decides growth with a
:class:`perforate.Grower`, one ``add_validation_score`` per epoch. ``GPA.pc.set_perforated_backpropagation(True)``
selects perforate's open ``pb`` mode; the default is gradient dendrites (``gd``), as in the
reference's open package. The camelCase generation is ``pb_globals`` / ``pb_utils``;
``library_perforatedai`` (LPA) has the processors and ResNet helpers, ``modules_perforatedai``
(PA) the wrapped layer class.
:func:`reset` starts a second, unrelated experiment in the same process.
"""
from . import globals_perforatedai, library_perforatedai, modules_perforatedai, utils_perforatedai
from .globals_perforatedai import reset

__all__ = ["globals_perforatedai", "library_perforatedai", "modules_perforatedai", "reset",
           "utils_perforatedai"]
