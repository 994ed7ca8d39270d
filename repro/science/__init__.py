"""The science: functions from models and tensors to numbers, with no knowledge of run folders.

Pruning (`prune`: magnitude and Wanda), probe activations (`activations`), perplexity, SAE
training and its curves (`saes`, `training_curves`, `pretrained_saes`), evaluation of SAEs on
a model (`evaluate`: explained variance, CE-loss score, causal importance), feature matching
(`match`), the statistics (`stats`), the synthetic method controls (`method_controls`), and
the seeds and CPU arithmetic pins every computation runs under (`seeding`, `numerics`). May
import `repro.study`, `repro.inputs` and the foundations; to change how a number is
computed, start here.
"""
