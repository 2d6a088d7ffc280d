"""seres_bench: the benchmark behind ``benchmarks/bench.py`` — the Flax SE-ResNets (linen
under ``jax.jit``, and ``jax_nnx``, their Flax NNX twins under ``seres_jax.nnx.train``'s
compiled step) against the PyTorch twins (eager and ``torch.compile``), JAX's first step with a
cold and a warm persistent compilation cache, the weight converter against a plain copy, and on
an image folder the training input pipeline against a torch ``DataLoader`` and ``seres eval``
against ``seres_torch``; and, opt-in (``--only SECTION``): what timm's recipe pieces cost in
the JAX training step (``recipe``), the input pipeline with timm's RandAugment and random
erasing against a DataLoader running timm's own transform (``augment``; timm's side in an
interpreter of its own), the ways to jit the NNX training step against the linen step
(``nnx-design``), what the ``seres eval`` command costs a user (``eval-cost``) and
``seres predict`` against timm's ``inference.py`` end to end (``predict``).

The package owns the measurement protocol and its report, nothing else: the models, the train
step and the optimizers come from ``seres_jax`` / ``seres_torch`` unchanged.

* **What is timed.** Per configuration and implementation: training-step throughput (forward,
  loss, backward, SGD update), inference throughput (eval mode), the first call of each (the
  compilation included), and peak memory. The data is fixed synthetic data already on the
  device, so the input pipeline is not measured there; the data benchmarks measure it apart.
* **Protocol.** First call, timed alone; ``--warmup`` untimed steps; then ``--repeats``
  repetitions of ``--steps`` steps, synchronised (``jax.block_until_ready``,
  ``torch.cuda.synchronize``) only at the end of each repetition; the median repetition gives
  the throughput.
* **Isolation.** The parent process imports neither JAX nor torch. Every (configuration,
  implementation) runs in a fresh child process (``bench.py`` with the hidden ``--worker``
  flag, answering with one JSON line), so peak RSS and first-call times are not polluted by
  another measurement, and compilation caches start cold (a fresh torch inductor/Triton cache
  directory per child; the JAX persistent cache is unset except in the cache measurement).

One module per job:

| module | job |
| --- | --- |
| ``configs`` | what is measured: configurations, implementations, the training recipe |
| ``measure`` | timing (first call, repetitions, medians), peak memory, the synthetic batch |
| ``jax_runner`` | the JAX (linen) training and inference steps |
| ``nnx_runner`` | the JAX NNX (``jax_nnx``) training and inference steps |
| ``torch_runner`` | the PyTorch steps, eager or under ``torch.compile`` |
| ``compile_cache`` | JAX's first step with a cold and a warm persistent compilation cache |
| ``converter`` | the weight converter against a plain copy |
| ``photo_folder`` | the data benchmarks' image folder of real-photo JPEGs |
| ``input_pipeline`` | a training loader's images/s: seres' grain pipeline or a torch DataLoader |
| ``eval_speed`` | one framework's evaluation speed on the folder, end to end and model only |
| ``data_bench`` | the data benchmarks' run, results, ratios and Markdown sections |
| ``recipe_overhead`` | timm's recipe pieces (EMA, drop path, accumulation) in the JAX train step |
| ``augment_pipeline`` | RandAugment + random erasing: seres' loader (host, device) against timm's |
| ``timm_augment_runner`` | that section's timm side, a script for an interpreter with timm |
| ``nnx_design`` | the ways to jit the NNX training step against the linen step |
| ``eval_cost`` | ``seres eval``'s wall time, peak memory and compilation, one process per case |
| ``predict_bench`` | ``seres predict`` against timm's ``inference.py`` (or ``seres_torch``) |
| ``machine`` | the host and the library versions |
| ``worker`` | the child processes: both ends of the one-JSON-line protocol |
| ``report`` | the results' entries, ratios, sections (and their header), the Markdown report |
| ``accel_pytest`` | the pytest plugin of ``accelerator_check.py``'s parity stage |
| ``cli`` | the command line and the run of every measurement |
"""
