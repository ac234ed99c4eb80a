"""Drop-in layers that run scripts written for other dendritic-optimization libraries on perforate."""
