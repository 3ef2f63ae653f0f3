"""Generator architectures: what each is (:mod:`~animecli.models.spec`, no torch), the networks
(:mod:`~animecli.models.v2`, :mod:`~animecli.models.lite`, :mod:`~animecli.models.norm`) and the
registry that builds one by name and recognises a state dict (:mod:`~animecli.models.registry`).

This file stays free of imports: the torch-free CPU engine reads :mod:`animecli.models.spec`
without paying for torch. Which file holds which weights is the business of :mod:`animecli.weights`.
"""
