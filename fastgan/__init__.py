"""fastgan: the classic GAN family on MNIST, correct first and then fast."""
__version__ = "0.1.0"
