def test_tiny_teller_writes_a_story(tiny_teller):
    story = tiny_teller.tell("I heard a knock.", seed=1)
    assert story.story.startswith("I heard a knock.")
    assert 0 < story.new_tokens <= 20
