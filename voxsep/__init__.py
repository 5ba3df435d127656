"""voxsep: separate an unknown number of talkers; enhance and synthesize speech with WaveNet."""
__version__ = "0.1.0"
