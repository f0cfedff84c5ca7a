"""Users: the people who hold credits, create models and earn (every creator is a user).

Invariant: every user has exactly one wallet and one earnings account, opened with the user.
"""
