"""The asyncio implementation; the blocking classes in ``gearshift._sync`` drive it."""
