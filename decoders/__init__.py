"""Protocol decoders and the decoder API (decoders.api) they implement."""
