"""Launchers, one module per kernel family: tensors -> strided views, render contexts, launch
plans (``common.KernelLaunch``) -> launches. They import the core (spec, codegen, launch,
runtime) and each other, never ops, functional, nn, tuning or aot."""
