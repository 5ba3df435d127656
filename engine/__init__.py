"""Training glue shared by separation and generation: checkpoint format + model registry
(:mod:`engine.checkpoint`), the task contract (:mod:`engine.task`), configs (:mod:`engine.config`)
and the Lightning trainer (:mod:`engine.train`).

Imports only :mod:`frontend`, torch, Lightning and yaml. Import submodules explicitly; this
package's ``__init__`` stays light so that loading a checkpoint does not import Lightning.
"""
