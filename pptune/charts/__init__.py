"""The series behind pptune's charts, computed without matplotlib (``pptune.draw.plan`` draws them).

Each module answers one planning question with a pure function that returns frozen dataclasses:
``bubble`` (how many micro-batches, how deep a pipeline), ``mbs`` (how large a micro-batch before memory runs
out), ``timeline`` (where the bubbles are), ``balance`` (is the layer split even) and ``pareto`` (what the
search found). ``context`` rebuilds a plan's inputs from its directory.
"""
