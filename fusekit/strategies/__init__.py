"""The four fusion strategies; each package registers itself in ``fusekit.registry``."""
