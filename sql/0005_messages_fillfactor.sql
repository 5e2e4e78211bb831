-- Room on each page of messages for HOT updates: an UPDATE that changes no
-- indexed column (and no column a partial index's predicate names) writes no
-- index entries, if the new row version fits on the same page.  The claim
-- of a provider call (claim_calls) is such an update: it sets only called_at
-- and updated_at.  Existing pages keep their packing; new pages get the room.
ALTER TABLE messages SET (fillfactor = 80);
