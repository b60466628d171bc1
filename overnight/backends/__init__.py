"""Model backends: each turns validated Messages params into a Message, behind `Backend`."""
