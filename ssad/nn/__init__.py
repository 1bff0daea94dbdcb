"""Building blocks shared by more than one method: filters, image-similarity losses, network blocks."""
