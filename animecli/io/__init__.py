"""Files in and out: finding inputs (discovery), decoding them (loader, photos), image
transforms on uint8 arrays, and writing outputs (writer). No torch; nothing here knows
about models or engines."""
