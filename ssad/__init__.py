"""ssad: self-supervised image anomaly detection (SSM, ST-SSAD, SGSF), trainable on a CPU."""

__version__ = "0.1.0"
