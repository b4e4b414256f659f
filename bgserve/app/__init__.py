"""The application layer: the executor every change goes through, and the work around it.

``executor`` sequences side effects (lock, decide, act, persist, follow up); ``service``
offers the operations; ``comparer``, ``prompt_validation`` and ``recovery`` each get only
the narrow interfaces they use (:mod:`.ports`).
"""
