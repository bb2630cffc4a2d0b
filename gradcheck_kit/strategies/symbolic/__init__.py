"""Random differentiable expressions with an analytic (sympy) gradient, behind
``gst.expressions``, ``gst.Expression`` and ``gst.Op``.

Modules, each importing only those before it: ``intervals`` (interval arithmetic, safe regions),
``ops`` (:class:`Op`, the built-in op table, domains and kinks), ``tree`` (nodes, evaluation,
guards), ``sympy_bridge`` (trees to sympy and back, printing, lambdified gradients, parsing text),
``expression`` (:class:`Expression`) and ``builder`` (the random tree builder, ``expressions``).
This package imports Hypothesis and sympy; it is reached through ``gradcheck_kit.strategies``.
"""
