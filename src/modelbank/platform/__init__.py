"""Operator settings changed at run time, shared by every replica."""
