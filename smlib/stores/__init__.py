"""Stores: where an SR's volumes live (files in a directory, or LVs).

The interface is ``smlib.stores.base.Store``; see its module docstring.
"""
