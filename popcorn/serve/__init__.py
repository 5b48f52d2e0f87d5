"""Hosting: who may do what (access), hand-outs of a visitor's own files (serving), ZeroGPU slots, the background
warm-up, prebuilt caches and GPU residency. Nothing here is part of F(x); the studio, the study server and the UI
use it to serve F(x) to people.
"""
