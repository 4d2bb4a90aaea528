"""The results of a run: the results document (`document`), its verification on read (`verify`),
the statistics it stores (`stats`) and the loss-band tables (`bands`)."""
