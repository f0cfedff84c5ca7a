"""Analytics for users, creators and admins (DESIGN §8)."""
